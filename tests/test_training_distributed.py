"""Two CPU processes (gloo DDP, launched by torchrun) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_model

from possam.training import generate_synthetic_coco_panoptic


WORKER = os.path.join(os.path.dirname(__file__), "distributed_training_worker.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FSDP_CPU_CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "accelerate_fsdp_cpu_2proc.yaml")


def launch(splits, output_dir, processes: int, per_device_batch_size: int, checkpoint=None, fsdp: bool = False) -> None:
    train = splits["train"]
    if fsdp:
        launcher = ["accelerate.commands.launch", "--config_file", FSDP_CPU_CONFIG, f"--main_process_port={free_port()}"]
    else:
        launcher = ["torch.distributed.run", f"--nproc_per_node={processes}", "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    command = [
        sys.executable, "-m", *launcher, WORKER, train.json_path, train.image_dir, train.vocabulary_path,
        str(output_dir), str(per_device_batch_size), *([str(checkpoint)] if checkpoint else []),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def unambiguous_splits(tmp_path_factory):
    # At most one thing instance per image: no two targets of one class (see distributed_training_worker.py).
    root = tmp_path_factory.mktemp("distributed")
    return {"train": generate_synthetic_coco_panoptic(root / "data", num_images=8, image_size=IMAGE_SIZE, max_instances=1)}


@pytest.fixture(scope="module")
def single_process_run(unambiguous_splits, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("single")
    launch(unambiguous_splits, output_dir, processes=1, per_device_batch_size=2)
    return json.loads((output_dir / "rank0.json").read_text()), torch.load(output_dir / "weights_rank0.pt")


def assert_same_training(rank0, reference):
    for name in reference:
        torch.testing.assert_close(rank0[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)
    initial = dict(tiny_model(mask_weight=0.0, dice_weight=0.0).named_parameters())
    distributed_update = torch.cat([(rank0[name] - initial[name]).flatten() for name in reference])
    single_update = torch.cat([(reference[name] - initial[name]).flatten() for name in reference])
    assert single_update.norm() > 1e-3
    assert (distributed_update - single_update).norm() <= 1e-5 * single_update.norm()


def test_fsdp_on_two_cpu_processes_equals_one_process(unambiguous_splits, single_process_run, tmp_path):
    """The FSDP Accelerate setup (CPU variant of training/configs/accelerate_fsdp_8gpu.yaml) trains two steps on two
    gloo processes like one process does; the frozen towers are not in the optimizer (it holds exactly the trainable
    parameters)."""
    launch(unambiguous_splits, tmp_path / "fsdp", processes=2, per_device_batch_size=1, fsdp=True)
    ranks = [json.loads((tmp_path / "fsdp" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["world_size"] for report in ranks] == [2, 2]
    assert all(report["optimizer_all_trainable"] for report in ranks)
    assert [report["optimizer_numel"] for report in ranks] == [tiny_trainable_numel()] * 2
    single, reference = single_process_run
    assert_same_training(torch.load(tmp_path / "fsdp" / "weights_rank0.pt"), reference)
    for distributed, local in zip(ranks[0]["losses"], single["losses"]):
        assert abs(distributed - local) <= 1e-4 * abs(local)


def tiny_trainable_numel() -> int:
    return sum(parameter.numel() for parameter in tiny_model().parameters() if parameter.requires_grad)


def test_two_processes_equal_one_process_with_the_same_global_batch(unambiguous_splits, single_process_run, tmp_path):
    splits = unambiguous_splits
    launch(splits, tmp_path / "ddp", processes=2, per_device_batch_size=1)
    single, reference = single_process_run

    ranks = [json.loads((tmp_path / "ddp" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["world_size"] for report in ranks] == [2, 2]
    # Both ranks trained, on different images: together they trained on what the single process trained on. (The
    # data loader fetches one batch ahead, so only the first `steps x batch` fetched items were trained on.)
    trained = [report["seen"][:2] for report in ranks]
    assert len(trained[0]) == len(trained[1]) == 2 and not set(trained[0]) & set(trained[1])
    assert sorted(trained[0] + trained[1]) == sorted(single["seen"][:4])

    rank0 = torch.load(tmp_path / "ddp" / "weights_rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "weights_rank1.pt")
    # Gradients were synchronized: both replicas hold identical weights after two optimizer steps...
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    # ...and they are the weights one process reaches with the same global batch: the updates agree to rounding
    # (measured 1e-7 relative; a gradient scaled by the process count would differ by 1.0).
    assert_same_training(rank0, reference)
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
