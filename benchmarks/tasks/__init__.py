"""Tasks: the Task protocol and the one cell loop (:mod:`.core`), and the tasks that plug into
it (classification, text-video retrieval, EVFR's training-set reduction)."""
