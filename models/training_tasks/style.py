"""Training hooks of the style task (the feed-forward style network, ``style``): its perceptual
loss measures with VGG-19 features, and it trains for one style image, not on a dataset."""

from __future__ import annotations

from cvexport.models.training_tasks.base import TrainingTask


class StyleTraining(TrainingTask):
    task = "style"
    uses_vgg_features = True
    data_refusal = ("--data applies to the ssd, classifier and fcn models; the style model takes its style image "
                    "with 'cvexport build style --style IMAGE'")


STYLE = StyleTraining()
