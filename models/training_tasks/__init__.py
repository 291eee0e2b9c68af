"""Training hooks per task (what fine-tuning and ``cvexport train`` do differently for detection,
classification, segmentation and style), one module per task, looked up by task name in
:mod:`cvexport.models.training_tasks.registry`."""
