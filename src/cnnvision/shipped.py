"""The names of the models shipped in ``cnnvision/pretrained/``, importable without torch so the
command line can list them in ``--help`` at once."""

PRETRAINED = ("keypoints15", "lenet5-mnist", "face-detector", "landmarks68", "face-parts")
