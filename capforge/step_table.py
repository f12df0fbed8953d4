"""The steps, in one table: each step's ``capforge`` sub-command, the workspace script that runs it
(None: the command only) and what it does. The scaffold writes the scripts from it
(capforge.workspace); the command line, the scripts and the demo run its handlers, the
``cmd_<command>`` functions of capforge.steps (with their options from ``_args_<command>``, where it has any).
It sits below both, so the workspace can name the scripts without importing the steps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    command: str
    script: str | None
    summary: str


STEPS: dict[str, Step] = {step.command: step for step in (
    Step("init", "init_working_space.py", "Create this workspace's folders; --reset clears checkpoints and logs."),
    Step("gen", "gen_sample_by_captcha.py", "Generate synthetic labelled captchas into data/pool."),
    Step("check", "check_file.py", "Decode every image, report problems and suggest settings."),
    Step("split", "split_dataset.py", "Split data/pool into data/train, data/validation and data/test."),
    Step("pack", "pack_dataset.py", "Pack the splits into TFRecords under packed/."),
    Step("train", "train.py", "Train the model, with checkpoints, early stop and TensorBoard logs."),
    Step("test", "test.py", "Evaluate the model on data/test and write a report."),
    Step("export", "save_model.py", "Export the best checkpoint to .keras and ONNX under exports/."),
    Step("predict", "predict.py", "Read every image of a folder (python predict.py FOLDER) into a CSV of answers."),
    Step("serve", "app.py", "Serve the exported model: a Gradio page and a base64 POST API."),
    Step("prelabel", "prelabel.py", "Pre-label a folder of unlabelled images (python prelabel.py FOLDER) "
         "into data/inbox."),
    Step("review", "review.py", "Review data/inbox in the terminal: accept, correct, skip or mark unreadable."),
    Step("retrain", "retrain.py", "Learn from newly labelled images; serve the new model only if it is better."),
    Step("settings", None, "Print the resolved settings."),
)}

# script in the workspace -> its step
SCRIPTS: dict[str, Step] = {step.script: step for step in STEPS.values() if step.script}
