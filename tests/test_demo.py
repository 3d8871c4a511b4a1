"""The demo in a tiny setting: it trains both runs and the logs find its wrong labels."""

from __future__ import annotations

import os

from tb_batch_images import read_batches, read_sample_stats


def test_demo_logs_reveal_the_mislabelled_files_among_the_highest_losses(
    tmp_path, run_python
):
    work, logs = tmp_path / "images", tmp_path / "logs"
    result = run_python(
        [
            "-m",
            "demo",
            "--no-serve",
            "--per-class",
            "120",
            "--work-dir",
            str(work),
            "--logdir",
            str(logs),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained both runs" in result.stdout
    mislabelled = {
        os.path.relpath(p, tmp_path)
        for p in (work / "mislabelled.txt").read_text().split()
    }
    assert len(mislabelled) == 24  # 5% of 480
    runs = {b.run for b in read_batches(str(logs))}
    assert runs == {
        "augmented/train",
        "augmented/validation",
        "plain/train",
        "plain/validation",
    }
    for run in ("augmented/train", "plain/train"):
        batches = list(read_batches(str(logs), run=run))
        last_epoch = max(b.epoch for b in batches)
        samples = [s for b in batches if b.epoch >= last_epoch - 2 for s in b.samples]
        assert all(s.filename for s in samples)
        hardest = sorted(samples, key=lambda s: -s.loss)[:10]
        found = sum(s.filename in mislabelled for s in hardest)
        # 5% of the files are wrong: 0.5 of 10 by chance. The logged samples of three
        # epochs vary with tf.data's parallel augmentation (measured 5 to 10 of 10).
        assert found >= 4, (run, [(s.filename, s.loss) for s in hardest])
        # The data map scores every sample over every epoch: its top suspects are
        # mostly the mislabelled files (measured 0.79 and 0.83 of 24; chance 0.05).
        table = read_sample_stats(str(logs), run=run).epochs[-1]
        suspects = [table.filenames[i] for i in table.suspects(len(mislabelled))]
        precision = sum(name in mislabelled for name in suspects) / len(mislabelled)
        assert precision >= 0.5, (run, precision, suspects)


def test_demo_trains_on_a_users_folder_of_class_subfolders(tmp_path, run_python):
    from PIL import Image

    for class_name, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        folder = tmp_path / "mine" / class_name
        folder.mkdir(parents=True)
        for index in range(12):
            size = (40 + index, 30)  # odd sizes: the demo resizes
            Image.new("RGB", size, colour).save(folder / f"{class_name}_{index}.jpg")
    logs = tmp_path / "logs"
    result = run_python(
        [
            "-m",
            "demo",
            "--no-serve",
            "--data-dir",
            str(tmp_path / "mine"),
            "--epochs",
            "1",
            "--every-n-steps",
            "1",
            "--logdir",
            str(logs),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using 24 images in 2 classes" in result.stdout
    samples = [s for b in read_batches(str(logs), run="plain/train") for s in b.samples]
    assert len(samples) == 24
    for sample in samples:
        class_name = "cats" if "/cats/" in sample.filename else "dogs"
        assert sample.label_name == class_name
        assert sample.image.shape == (64, 64, 3)
