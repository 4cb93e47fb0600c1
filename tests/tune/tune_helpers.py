"""Shared pieces of the tuning tests (test files never import conftest)."""

TINY = [
    "data.img_height=32", "data.img_width=32", "data.input_length=3", "data.total_length=6",
    "model.patch_size=4", "model.num_hidden=[8]", "model.filter_size=3",
    "optim.batch_size=2", "optim.eval_clips=4", "optim.keep_best=2",
]
