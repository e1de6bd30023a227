"""Keras registration of the policy and schedule classes, without loading Keras to define them.

Policies and schedules are plain, validated descriptions; parsing one (``tinyprop finetune --policy ...``) must
not load TensorFlow, which takes seconds. So a class is registered with Keras (as ``tinyprop_tf>ClassName``) at
definition when Keras is loaded already, and otherwise at the latest when Keras first asks for its config:
``keras.saving.serialize_keras_object`` calls ``get_config`` before it looks the class's registered name up, so
``keras_serializable`` makes ``get_config`` register every marked class first (once Keras is loaded). Deserialising goes through
``register_with_keras()`` too (the sparse layers' module calls it on import, and so does ``policies.get``).
"""

from __future__ import annotations

import functools
import sys

_MARKED: list[type] = []
_DONE: set[type] = set()


def keras_serializable(cls: type) -> type:
    """Class decorator: ``cls`` is known to Keras as ``tinyprop_tf>ClassName`` whenever Keras handles it."""
    _MARKED.append(cls)
    get_config = cls.get_config  # its own or inherited

    @functools.wraps(get_config)
    def registering_get_config(self):
        if "keras" in sys.modules:  # Keras may be serialising: register (repr and == need no Keras)
            register_with_keras()
        return get_config(self)

    cls.get_config = registering_get_config
    if "keras" in sys.modules:
        register_with_keras()
    return cls


def register_with_keras() -> None:
    """Register every marked class not registered yet (imports Keras the first time)."""
    pending = [cls for cls in _MARKED if cls not in _DONE]
    if not pending:
        return
    import keras

    for cls in pending:
        keras.saving.register_keras_serializable(package="tinyprop_tf")(cls)
        _DONE.add(cls)
