"""``describe_image``: what an image shows — objects, people, scene, visible text in passing."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .base import ImageTool


class DescribeArgs(BaseModel):
    image_id: str = Field(description="Id of the image to describe, for example img-1.")
    focus: str | None = Field(default=None, description="Optional thing to look at, for example 'the people'.")


class DescribeTool(ImageTool):
    name: str = "describe_image"
    description: str = (
        "Describe what a photo or picture shows (scene, objects, people, details), or what kind of document it is."
    )
    args_schema: type[BaseModel] = DescribeArgs
    max_image_tokens: int = 768
    max_tokens: int = 384

    def _use(self, image_id: str, focus: str | None = None):
        image = self.store.get(image_id)
        instruction = "Describe this image in a few sentences: the scene, the main objects and what is happening."
        if focus:
            instruction += f" Pay special attention to: {focus}."
        return self.look(image, instruction), [self.store.info(image_id).id], None
