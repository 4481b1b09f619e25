"""Detect one layer, loss, model or optimizer being used by two threads at once.

These objects keep work buffers and state between calls, so two threads
running one object at the same time would overwrite each other's buffers and
produce wrong numbers without any error. Each such object owns a
:class:`UseGuard`, and its stateful methods enter the guard without blocking:
a thread that finds the guard held by another thread gets a RuntimeError.

The thread that holds a guard may enter it again, as ``train_step`` does when
it holds the model's guard for a whole step and calls ``model.forward``.

The guard detects calls that overlap in time. Two threads that take turns
(one thread's forward, then the other's forward, then the first one's backward)
are not detected and still get wrong gradients.
"""

import functools
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

_get_ident = threading.get_ident

# The id of this process, updated in the child after os.fork(). A guard that
# was taken before a fork stays held in the child, where the thread that took
# it does not exist, and comparing process ids detects that case.
_process_id = os.getpid()


def _update_process_id() -> None:
    global _process_id
    _process_id = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_update_process_id)

MethodT = TypeVar("MethodT", bound=Callable[..., Any])


class UseGuard:
    """Non-blocking lock that records which thread holds it.

    A copied or unpickled object is not in use, so it gets a new guard.
    """

    __slots__ = ("_lock", "_owner", "_owner_process", "entry_count")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._owner_process = _process_id
        # The number of times the guard was taken, so that a reader such as
        # Sequential.predict can tell whether a call overlapped its own.
        self.entry_count = 0

    def __reduce__(self) -> tuple[type["UseGuard"], tuple[()]]:
        return (UseGuard, ())

    def enter(self, user: object) -> bool:
        """Take the guard for the calling thread, for the object ``user``.

        Returns True if the guard was free and is now held, and False if the
        calling thread already held it, in which case :meth:`exit` must not be
        called for this entry. Raises RuntimeError if another thread holds it,
        or if a thread of the parent process held it when this process was
        forked.
        """
        if self._lock.acquire(False):
            self._owner = _get_ident()
            self._owner_process = _process_id
            self.entry_count += 1
            return True
        if self._owner == _get_ident():
            return False
        if self.held_before_fork():
            raise forked_in_use_error(user)
        raise in_use_error(user)

    def exit(self) -> None:
        """Release the guard taken by an :meth:`enter` call that returned True."""
        self._owner = None
        self._lock.release()

    def held_by_other_thread(self) -> bool:
        """Return whether a thread other than the caller holds the guard."""
        return self._lock.locked() and self._owner != _get_ident()

    def held_before_fork(self) -> bool:
        """Return whether a thread of the parent process held the guard when this process was forked."""
        return self._lock.locked() and self._owner_process != _process_id


def in_use_error(user: object) -> RuntimeError:
    """Return the RuntimeError for ``user`` being entered by a second thread."""
    return RuntimeError(
        f"{type(user).__name__} is already in use by another thread. Give each thread "
        f"its own model, layers, loss and optimizer"
    )


def forked_in_use_error(user: object) -> RuntimeError:
    """Return the RuntimeError for ``user`` whose guard a thread held when the process was forked."""
    return RuntimeError(
        f"{type(user).__name__} was in use by another thread when this process was forked, "
        f"so its buffers and parameters may be partly updated and it stays locked in this "
        f"process. Use a model saved or copied before the fork, or fork only while no "
        f"thread is training"
    )


def exclusive(method: MethodT) -> MethodT:
    """Wrap ``method`` so that it raises RuntimeError while another thread uses its object.

    The object must have a ``_use_guard`` attribute holding a :class:`UseGuard`.
    """

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        guard = self._use_guard
        if not guard.enter(self):
            return method(self, *args, **kwargs)
        try:
            return method(self, *args, **kwargs)
        finally:
            guard.exit()

    return cast(MethodT, guarded)


def enter_all(users: Iterable[object]) -> list[UseGuard]:
    """Enter the guard of each object in ``users`` that has one, for a whole operation.

    Returns the guards that this call took, to be passed to :func:`exit_all`.
    If one guard is held by another thread, the guards already taken are
    released and RuntimeError is raised. Any other exception on the way, such
    as a KeyboardInterrupt, also releases them. Objects without a
    ``_use_guard`` attribute, such as an optimizer of another library, are
    skipped.
    """
    entered_guards: list[UseGuard] = []
    try:
        for user in users:
            guard = getattr(user, "_use_guard", None)
            if guard is not None and guard.enter(user):
                entered_guards.append(guard)
    except BaseException:
        exit_all(entered_guards)
        raise
    return entered_guards


def exit_all(guards: list[UseGuard]) -> None:
    """Release the guards returned by :func:`enter_all`, in reverse order."""
    for guard in reversed(guards):
        guard.exit()
