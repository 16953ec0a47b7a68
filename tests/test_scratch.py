"""Batch-sized tensors kept from batch to batch."""

import pickle

import torch

from solulab.neurons.scratch import Scratch

CPU = torch.device("cpu")


def test_a_batch_no_larger_reuses_the_kept_tensor():
    scratch = Scratch()
    first = scratch.get("code", (4, 6), torch.float32, CPU)
    again = scratch.get("code", (4, 6), torch.float32, CPU)
    smaller = scratch.get("code", (3, 6), torch.float32, CPU)  # the last, short batch
    assert again.data_ptr() == first.data_ptr() == smaller.data_ptr()
    assert smaller.shape == (3, 6) and smaller.is_contiguous()
    assert scratch.get("group", (4, 6), torch.float32, CPU).data_ptr() != first.data_ptr()
    assert scratch.nbytes() == 2 * 4 * 6 * 4  # two kept tensors of 24 floats


def test_more_room_or_another_dtype_takes_a_new_tensor():
    scratch = Scratch()
    first = scratch.get("code", (4, 6), torch.float32, CPU)
    larger = scratch.get("code", (5, 6), torch.float32, CPU)
    assert larger.shape == (5, 6) and larger.data_ptr() != first.data_ptr()
    as_int = scratch.get("code", (5, 6), torch.int32, CPU)
    assert as_int.dtype == torch.int32
    assert scratch.get("code", (2, 6), torch.int32, CPU).data_ptr() == as_int.data_ptr()


def test_it_pickles_empty():
    scratch = Scratch()
    scratch.get("code", (1000, 1000), torch.float32, CPU)
    copy = pickle.loads(pickle.dumps(scratch))
    assert len(pickle.dumps(scratch)) < 1000
    assert copy.get("code", (2, 2), torch.float32, CPU).shape == (2, 2)
