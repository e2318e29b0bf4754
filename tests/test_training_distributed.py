"""Two CPU processes (gloo DDP, launched by torchrun) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch
from conftest import IMAGE_SIZE, tiny_model

from possam.training import generate_synthetic_coco_panoptic


WORKER = os.path.join(os.path.dirname(__file__), "distributed_training_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(splits, output_dir, processes: int, per_device_batch_size: int, checkpoint=None) -> None:
    train = splits["train"]
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
        f"--master_port={free_port()}", WORKER, train.json_path, train.image_dir, train.vocabulary_path,
        str(output_dir), str(per_device_batch_size), *([str(checkpoint)] if checkpoint else []),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-4000:]


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    # At most one thing instance per image: no two targets of one class (see distributed_training_worker.py).
    splits = {"train": generate_synthetic_coco_panoptic(tmp_path / "data", num_images=8, image_size=IMAGE_SIZE, max_instances=1)}
    launch(splits, tmp_path / "ddp", processes=2, per_device_batch_size=1)
    launch(splits, tmp_path / "single", processes=1, per_device_batch_size=2)

    ranks = [json.loads((tmp_path / "ddp" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["world_size"] for report in ranks] == [2, 2]
    # Both ranks trained, on different images: together they trained on what the single process trained on. (The
    # data loader fetches one batch ahead, so only the first `steps x batch` fetched items were trained on.)
    trained = [report["seen"][:2] for report in ranks]
    assert len(trained[0]) == len(trained[1]) == 2 and not set(trained[0]) & set(trained[1])
    single = json.loads((tmp_path / "single" / "rank0.json").read_text())
    assert sorted(trained[0] + trained[1]) == sorted(single["seen"][:4])

    rank0 = torch.load(tmp_path / "ddp" / "weights_rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "weights_rank1.pt")
    reference = torch.load(tmp_path / "single" / "weights_rank0.pt")
    # Gradients were synchronized: both replicas hold identical weights after two optimizer steps...
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    # ...and they are the weights one process reaches with the same global batch: the updates agree to rounding
    # (measured 1e-7 relative; a gradient scaled by the process count would differ by 1.0).
    for name in reference:
        torch.testing.assert_close(rank0[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)
    initial = dict(tiny_model(mask_weight=0.0, dice_weight=0.0).named_parameters())
    distributed_update = torch.cat([(rank0[name] - initial[name]).flatten() for name in reference])
    single_update = torch.cat([(reference[name] - initial[name]).flatten() for name in reference])
    assert single_update.norm() > 1e-3
    assert (distributed_update - single_update).norm() <= 1e-5 * single_update.norm()
    # The mask losses' normalizer is the mask count averaged over processes (not divided by the world size twice).
    average = (ranks[0]["local_masks"] + ranks[1]["local_masks"]) / 2
    assert ranks[0]["num_masks"] == ranks[1]["num_masks"] == average
    # The logged loss is averaged over processes: it equals the single process's batch loss.
    assert ranks[0]["losses"] == ranks[1]["losses"]
    for distributed, local in zip(ranks[0]["losses"], single["losses"]):
        assert abs(distributed - local) <= 1e-4 * abs(local)


def test_two_processes_train_a_saved_checkpoint_without_searching_for_unused_parameters(synthetic_splits, tmp_path):
    """`possam train --model_name_or_path <checkpoint>` under DDP with `ddp_find_unused_parameters=False`: fails with
    "Expected to have finished reduction" if loading unfroze a tower (its parameters would never get a gradient)."""
    saved = tiny_model()
    saved.save_pretrained(tmp_path / "checkpoint")
    launch(synthetic_splits, tmp_path / "ddp", processes=2, per_device_batch_size=1, checkpoint=tmp_path / "checkpoint")
    rank0 = torch.load(tmp_path / "ddp" / "weights_rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "weights_rank1.pt")
    trainable = {name for name, parameter in saved.named_parameters() if parameter.requires_grad}
    assert set(rank0) == set(rank1) == trainable
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    initial = dict(saved.named_parameters())
    assert any(not torch.equal(rank0[name], initial[name]) for name in rank0)  # it trained
