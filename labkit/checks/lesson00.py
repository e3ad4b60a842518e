"""Checks for 00-Start-Here.

``check_first_capture`` reads a capture: in replay mode it grades the recording only
when the student's run was the same conversation (see :func:`not_a_recording`), so
sending b"pong" is never passed on the strength of the author's b"ping".
"""

from __future__ import annotations

from labkit.capture.capture import capture_mode

from . import Verdict, answers_back, first_failure, not_a_recording, verdict


@answers_back
def check_mode_answer(answer) -> Verdict:
    """The student reads the doctor's report and names the capture mode."""
    mode, _ = capture_mode()
    if not isinstance(answer, str):
        return Verdict(False, f"give the mode as a string such as 'live', not {answer!r}",
                       "copy the word after 'capture mode :' in the doctor's report")
    return verdict(answer.strip().lower() == mode,
                   "that is the mode the doctor reports for this kernel",
                   wrong=f"you said {answer!r}, which is not the mode the doctor reports",
                   hint="the first line of the report: 'capture mode : <mode> — <why>'")


@answers_back
def check_first_capture(wire) -> Verdict:
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
    sent = b"".join(bytes(s.packet["TCP"].payload) for s in segs if s.src == "client")
    return first_failure(
        verdict(flags == ["SYN", "SYN-ACK", "ACK"], "", wrong=f"the capture starts {flags}",
                hint="open the connection inside the `with Capture(...)` block"),
        verdict(sent == b"ping", "", wrong=f"the client sent {sent!r}, not b'ping'",
                hint="after connecting, send exactly the bytes the exercise names, on that "
                     "socket, before the `with` block ends"),
        right="a handshake, then your 4 bytes: you captured your first TCP connection")


def _ran_nothing(wire) -> bool:
    """Did the student's own run open no connection? (In replay mode the packets shown are
    the recording's, so ask the servers, ``live_summary``, instead.)"""
    if getattr(wire, "mode", None) == "replay":
        seen = getattr(wire, "live_summary", None)
        return seen is not None and not any(entry["connections"] for entry in seen.values())
    return not wire.segments
