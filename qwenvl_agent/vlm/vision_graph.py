"""Edits to the exported vision tower's graphs that keep what it computes and drop work it does not need, for
an engine that encodes one still image at a time (engine_openvino.py).

- The patch embedding is a 3D convolution whose kernel covers the whole patch, so it is one matrix product
  of the flattened patches; OpenVINO's CPU plugin runs the convolution some 25x slower (389 against 15 ms for
  a 900-token invoice on a 2-core Xeon).
- The tower's attention takes a ``[1, patches, patches]`` mask that keeps the patches of different images
  apart when several are encoded at once. With one image every patch sees every other and the mask only adds
  zeros, at a cost: the tower took 4.0-4.5 s with it and 3.7 s without for the same invoice.

Each edit checks that the graph has the shape it expects and leaves a graph it does not recognise as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def simplify_vision_tower(model: Any) -> None:
    """Both edits on an ``OVModelForVisualCausalLM``'s vision parts, before they are compiled."""
    embeddings = getattr(model, "vision_embeddings", None)
    merger = getattr(model, "vision_embeddings_merger", None)
    if embeddings is not None and getattr(embeddings, "model", None) is not None:
        patches_as_one_matmul(embeddings.model)
    if merger is not None and getattr(merger, "model", None) is not None and attend_across_the_image(merger.model):
        # optimum-intel passes only the inputs a part has: the mask it builds is no longer given.
        merger.input_names = {port.get_any_name(): index for index, port in enumerate(merger.model.inputs)}


def patches_as_one_matmul(graph: Any) -> bool:
    """Replace the patch embedding's convolution over whole patches by a product with its flattened weights.
    True if the graph was changed."""
    import openvino.opset13 as ops

    convolutions = [op for op in graph.get_ordered_ops() if op.get_type_name() == "Convolution"]
    if len(convolutions) != 1:
        return False
    conv = convolutions[0]
    patches = conv.input_value(0)
    weight = conv.input_value(1).get_partial_shape()
    shape = patches.get_partial_shape()
    attributes = conv.get_attributes()
    if weight.is_dynamic or shape.rank.is_dynamic or any(dim.is_dynamic for dim in list(shape)[1:]):
        return False
    kernel = [dim.get_length() for dim in list(weight)[2:]]
    whole = [dim.get_length() for dim in list(shape)[2:]]
    if (
        kernel != whole
        or list(attributes["strides"]) != kernel
        or any(attributes["pads_begin"])
        or any(attributes["pads_end"])
        or list(attributes["dilations"]) != [1] * len(kernel)
    ):
        return False
    after = [target.get_node() for target in conv.output(0).get_target_inputs()]
    if len(after) != 1 or after[0].get_type_name() != "Reshape" or after[0].get_output_partial_shape(0).rank.get_length() != 2:
        return False
    width = int(np.prod([dim.get_length() for dim in list(shape)[1:]]))
    rows = ops.reshape(patches, np.array([-1, width], np.int64), False)  # one patch a row, as the convolution saw it
    flat = ops.reshape(conv.input_value(1), np.array([weight[0].get_length(), width], np.int64), False)
    product = ops.matmul(rows, flat, False, True)
    for target in list(after[0].output(0).get_target_inputs()):
        target.replace_source_output(product.output(0))
    graph.validate_nodes_and_infer_types()
    return True


def attend_across_the_image(graph: Any) -> bool:
    """Rebuild each attention of the tower without the mask and drop the mask input. True if the graph was
    changed; a mask that feeds anything but the attentions is kept."""
    import openvino.opset13 as ops

    masks = [p for p in graph.get_parameters() if "attention_mask" in p.output(0).get_names()]
    if len(masks) != 1:
        return False
    users = [target.get_node() for target in masks[0].output(0).get_target_inputs()]
    if not users or any(node.get_type_name() != "ScaledDotProductAttention" or node.get_input_size() != 4 for node in users):
        log.info("The vision tower's attention mask is used in an unexpected way; keeping it.")
        return False
    for node in users:
        plain = ops.scaled_dot_product_attention(*(node.input_value(i) for i in range(3)), causal=False)
        plain.set_friendly_name(node.get_friendly_name())
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(plain.output(0))
    graph.remove_parameter(masks[0])
    graph.validate_nodes_and_infer_types()
    return True
