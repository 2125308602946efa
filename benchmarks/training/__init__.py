"""The one training loop (:func:`fit.fit`) and the checkpoint cache (:func:`fit.cached_fit`,
:mod:`checkpoints`) that every trained piece of the harness goes through."""
