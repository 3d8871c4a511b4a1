"""The README's quick start runs as written (extracted from README.md, not copied)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_quick_start_trains_logs_and_reads_back(tmp_path, run_python):
    snippets = quick_start_snippets()
    assert len(snippets) == 2, "the quick start has a training and a reading snippet"
    script = "\n".join(snippets)
    result = run_python(["-c", script], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("quickstart/train ")
    ]
    assert lines, result.stdout[-2000:]
    # every logged sample carries its real filename, label and an image
    for line in lines:
        run, step, filename, label, *_ = line.split()
        index = int(filename.removeprefix("quickstart_").removesuffix(".png"))
        assert int(label) == index % 3
        assert line.endswith("(32, 32, 3)")
    assert (tmp_path / "logs" / "quickstart" / "train").is_dir()


def section_snippets(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_directory_loader_names_train_and_validation_files(tmp_path, run_python):
    (snippet,) = section_snippets("A folder of pictures")
    check = (
        "\nfrom tb_batch_images import read_batches\n"
        "for b in read_batches('logs/folder'):\n"
        "    for s in b.samples:\n"
        "        print('LOGGED', b.mode, s.filename, s.label_name)\n"
    )
    result = run_python(["-c", snippet + check], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [line.split() for line in result.stdout.splitlines() if "LOGGED" in line]
    assert {mode for _, mode, _, _ in logged} == {"train", "validation"}
    for _, _, filename, label_name in logged:
        assert filename.split("/")[-2] == label_name


def test_readme_augmentation_in_the_model_logs_the_layer_output(tmp_path, run_python):
    (snippet,) = section_snippets("Augmentation and preprocessing layers")
    check = (
        "\nfrom tb_batch_images import read_batches\n"
        "for b in read_batches('logs/augmented'):\n"
        "    print('SOURCE', b.record['image_source'], b.samples[0].flags)\n"
    )
    result = run_python(["-c", snippet + check], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sources = [line for line in result.stdout.splitlines() if "SOURCE" in line]
    assert len(sources) == 4
    assert all(line.startswith("SOURCE rescaling ") for line in sources)
    assert all("rescaled" not in line for line in sources)


def test_readme_several_heads_logs_the_classification_head_and_every_loss(
    tmp_path, run_python
):
    (snippet,) = section_snippets("Several heads")
    check = (
        "\nfrom tb_batch_images import read_batches\n"
        "for b in read_batches('logs/heads'):\n"
        "    for s in b.samples:\n"
        "        print('HEAD', b.record['output'], s.label,\n"
        "              sorted(s.record['head_losses']), b.warnings)\n"
    )
    result = run_python(["-c", snippet + check], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("HEAD")]
    assert len(lines) == 4 * 16
    for line in lines:
        _, output, label, rest = line.split(" ", 3)
        assert output == "cls" and label in ("0", "1", "2")
        assert rest == "['box', 'cls'] []"


def test_readme_segmentation_logs_masks_and_their_scores(tmp_path, run_python):
    (snippet,) = section_snippets("Segmentation and dense outputs")
    check = (
        "\nfrom tb_batch_images import read_batches\n"
        "for b in read_batches('logs/segmentation'):\n"
        "    for s in b.samples:\n"
        "        truth = (images[s.sample_id][..., 0] * 3).astype('int32')\n"
        "        print('MASK', b.record['masks'], (s.label_mask == truth).all(),\n"
        "              s.prediction_mask.shape, 0 <= s.record['mean_iou'] <= 1,\n"
        "              b.warnings)\n"
    )
    result = run_python(["-c", snippet + check], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("MASK")]
    assert len(lines) == 4 * 16
    assert set(lines) == {"MASK classes True (32, 32) True []"}


def test_readme_detection_logs_the_flipped_boxes_and_the_predictions(
    tmp_path, run_python
):
    """The object detection snippet: every logged label box is its picture's square
    (found in the logged pixels), with predicted boxes and no warning."""
    (snippet,) = section_snippets("Object detection: the boxes the model trained on")
    check = (
        "\nimport numpy as np\n"
        "from tb_batch_images import read_batches\n"
        "for b in read_batches('logs/detection'):\n"
        "    for s in b.samples:\n"
        "        ys, xs = np.nonzero(s.image[..., 0] > 128)\n"
        "        found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]\n"
        "        print('BOX', b.record['task'], len(s.boxes['label']),\n"
        "              np.allclose(s.boxes['label'][0], found, atol=0.5),\n"
        "              len(s.boxes['prediction']), b.warnings)\n"
    )
    result = run_python(["-c", snippet + check], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tb_batch_images:" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("BOX")]
    assert len(lines) == 4 * 16
    assert set(lines) == {"BOX detection 1 True 3 []"}
