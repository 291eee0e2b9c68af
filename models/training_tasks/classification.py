"""Training hooks of the classification task (ResNet-18, ``classifier``): ImageFolder datasets,
the fc layer as the head (Xavier-uniform, as d2l does), cross-entropy, top-1 on val."""

from __future__ import annotations

from typing import Sequence

from cvexport.models.imagefolder_format import IMAGEFOLDER
from cvexport.models.training_tasks.base import FineTuning, Recipe, load_kept, shipped_tensors


class ClassificationTraining(FineTuning):
    task = "classification"
    dataset_format = IMAGEFOLDER
    # The rate of the shipped recipe's fine-tuning phase.
    recipe = Recipe(batch_size=32, lr=0.01, weight_decay=1e-3, warmup_steps=20, epochs=10)
    imagenet_start = True
    contact_columns = 8  # the 64-px pictures make small cells

    def sample(self, entry, image, class_count, colors):
        from cvexport.models.classification_data import ClassificationSample

        return ClassificationSample(image, int(entry.label))

    def fit_to_input(self, sample, size):
        from cvexport.models.classification_data import fit_to_input

        return fit_to_input(sample, size)

    def truth(self, entry, class_count, colors):
        """The class id."""
        return int(entry.label)

    def network(self, spec, num_classes, input_side, start, pretrained=None):
        from cvexport.models.classifier import build_classifier, fine_tune_model

        body = build_classifier(len(spec.class_names))
        if start == "shipped":
            body.load_state_dict(shipped_tensors(spec))
        elif start == "imagenet":
            from cvexport.pretrained import resnet18_weights

            load_kept(body, resnet18_weights(pretrained), ("fc.",), str(pretrained.path))
        model = fine_tune_model(body, num_classes)  # every layer kept but fc, Xavier-initialized
        return model, list(model.fc.parameters())

    def architecture(self, model) -> str:
        return "resnet18"  # torchvision's name, which the class name (ResNet) does not give

    def batch(self, chosen, images, model):
        import torch

        return {"images": images, "labels": torch.tensor([s.label for s in chosen], dtype=torch.long)}

    def loss(self):
        from cvexport.models.classifier_training import classification_loss

        return classification_loss

    def contact_cell(self, sample, class_names: Sequence[str]):
        from cvexport.models.contact_sheet import classification_cell

        return classification_cell(sample.image, class_names[sample.label])

    def predictions(self, model, outputs, fitted, size):
        """The class ids of the highest logits."""
        return [int(c) for c in outputs.argmax(1)]

    def scores(self, predictions, truths, class_names, images):
        """``val_top1``."""
        from cvexport.metrics import top1_accuracy

        return {"val_top1": top1_accuracy(predictions, truths, len(class_names)), "val_images": images}


CLASSIFICATION = ClassificationTraining()
