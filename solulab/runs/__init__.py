"""Run directories: their files and records (``rundir``), loading any model a command is given
(``pretrained``), the model card and the experiment trackers."""
