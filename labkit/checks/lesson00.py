"""Checks for 00-Start-Here.

``check_first_capture`` reads a capture: in replay mode it grades the recording only
when the student's run was the same conversation (see :func:`not_a_recording`), so
sending b"pong" is never passed on the strength of the author's b"ping".
"""

from __future__ import annotations

from collections.abc import Callable

from labkit.capture.capture import Capture, capture_mode

from . import Verdict, answers_back, first_failure, not_a_recording, unfinished, verdict

# Reports of every mode, with reasons that mention other modes and hold colons, so that
# only reading the first line's field gives the right answer every time.
_REPORTS = [
    ("replay", "LABKIT_CAPTURE=replay: forced (the live capture needs CAP_NET_RAW)"),
    ("live", "this Python may open raw sockets (CAP_NET_RAW): no replay needed"),
    ("record", "LABKIT_CAPTURE=record writes recordings to data/ (live, then saved)"),
]


def _report(mode: str, reason: str) -> str:
    """A report as the doctor writes it (``labkit.tools.doctor.report``: first line)."""
    return (f"capture mode : {mode} — {reason}\n"
            "fix          : see `python -m labkit doctor`\n"
            "network      : private — this kernel has its own network namespace\n")


@answers_back
def check_mode_answer(mode_of: Callable[[str], str]) -> Verdict:
    """``mode_of(report)`` takes the capture mode out of the first line of any doctor's
    report (made-up ones for every mode, then one with this kernel's mode and reason)."""
    if not callable(mode_of):
        return Verdict(False, f"give your function mode_of itself, not {mode_of!r}",
                       "check_mode_answer(mode_of), without parentheses: the check calls it "
                       "on several reports")
    cases = [(mode, _report(mode, reason)) for mode, reason in _REPORTS]
    cases.append((capture_mode()[0], _report(*capture_mode())))
    for mode, text in cases:
        first_line = text.splitlines()[0]
        try:
            answer = mode_of(text)
        except Exception as exc:
            if unfinished(exc):
                raise
            return Verdict(False, f"for a report whose first line is {first_line!r}, mode_of "
                           f"raised {type(exc).__name__}: {exc or '(no message)'}",
                           "take the first line (splitlines()), the part after the first ':' "
                           "(split(':', 1)), then its first word (split())")
        if answer == mode:
            continue
        if isinstance(answer, str) and answer.strip().lower() == mode:
            return Verdict(False, f"for {first_line!r} mode_of returned {answer!r}: the mode, "
                           "with spaces or capitals around it",
                           "strip() the spaces away, and keep the word as it is written")
        return Verdict(False, f"for a report whose first line is {first_line!r} mode_of "
                       f"returned {answer!r}",
                       "read the mode out of the report the function is given (its first "
                       "line: 'capture mode : <mode> — <why>'), not this kernel's mode or a "
                       "word found elsewhere in the report")
    return Verdict(True, f"mode_of reads the mode out of any report: {len(_REPORTS)} made-up "
                   "ones, one for each mode, and one with this kernel's own mode and reason")


@answers_back
def check_first_capture(wire: Capture) -> Verdict:
    """A capture holding a handshake and the 4 bytes b'ping' sent by the client."""
    try:
        segs = wire.segments
    except (AttributeError, RuntimeError) as exc:
        return Verdict(False, f"that is not a finished capture ({exc})",
                       "pass the `wire` from `with ... Capture(server, ...) as wire:`")
    if _ran_nothing(wire):
        return Verdict(False, "your code is not written yet (nothing connected during the "
                       "capture)", "write the client inside the `with` block, run that cell, "
                       "then run this check again")
    refused = not_a_recording(wire)
    if refused is not None:  # (a failed Verdict is falsy)
        return refused
    flags = [s.flags for s in segs[:3]]
    sent = b"".join(bytes(s.packet["TCP"].payload) for s in segs
                    if s.src == "client" and s.packet is not None and "TCP" in s.packet)
    return first_failure(
        verdict(flags == ["SYN", "SYN-ACK", "ACK"], "", wrong=f"the capture starts {flags}",
                hint="open the connection inside the `with Capture(...)` block"),
        verdict(sent == b"ping", "", wrong=f"the client sent {sent!r}, not b'ping'",
                hint="after connecting, send exactly the bytes the exercise names, on that "
                     "socket, before the `with` block ends"),
        right="a handshake, then your 4 bytes: you captured your first TCP connection")


def _ran_nothing(wire: Capture) -> bool:
    """Did the student's own run open no connection? (In replay mode the packets shown are
    the recording's, so ask the servers, ``live_summary``, instead.)"""
    if getattr(wire, "mode", None) == "replay":
        seen = getattr(wire, "live_summary", None)
        return seen is not None and not any(entry["connections"] for entry in seen.values())
    return not wire.segments
