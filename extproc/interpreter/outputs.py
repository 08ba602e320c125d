"""Jupyter iopub messages -> E2B's NDJSON output lines (pure: no kernel, no I/O).

The SDK (`e2b_code_interpreter.models._parse_output`) dispatches on `type` and builds
`Result(**line)`, so result lines carry E2B's short keys, never MIME types; a MIME type it
has no key for goes into `extra` rather than being dropped. Tracebacks stay exactly as the
kernel formats them (ANSI colours included, lines joined with newlines): the SDK treats
`traceback` as one opaque string, as E2B's own server sends it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from extproc.interpreter.kernel_side.agentcube_e2b_kernel import CHART_MIME, DATA_MIME

Line = dict[str, Any]

# MIME type -> the SDK's Result attribute. `chart` and `data` come from our Python kernel's
# own formatters (kernel_side/agentcube_e2b_kernel.py).
MIME_KEYS: dict[str, str] = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    CHART_MIME: "chart",
    DATA_MIME: "data",
}

END_OF_EXECUTION: Line = {"type": "end_of_execution"}
KEEPALIVE: Line = {"type": "keepalive"}


def output_line(stream: str, text: str) -> Line:
    # The SDK documents `timestamp` as Unix epoch nanoseconds.
    return {"type": stream, "text": text, "timestamp": time.time_ns()}


def error_line(name: str, value: str, traceback: str = "") -> Line:
    return {"type": "error", "name": name, "value": value, "traceback": traceback}


def result_line(data: dict[str, Any], *, is_main_result: bool) -> Line:
    line: Line = {"type": "result", "is_main_result": is_main_result}
    extra: dict[str, Any] = {}
    for mime, value in data.items():
        key = MIME_KEYS.get(mime)
        if key is None:
            extra[mime] = value
        else:
            line[key] = value
    if extra:
        line["extra"] = extra
    return line


@dataclass
class OutputBudget:
    """Caps the stdout and stderr bytes one execution streams, each on its own.

    A runaway `print` loop would otherwise fill the client and every proxy in between; after
    the cap one stderr line says what was dropped, and the kernel keeps running.
    """

    limit: int
    used: dict[str, int] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)

    def admit(self, stream: str, text: str) -> list[Line]:
        if stream in self.truncated:
            return []
        used = self.used.get(stream, 0)
        size = len(text.encode())
        if used + size <= self.limit:
            self.used[stream] = used + size
            return [output_line(stream, text)]
        self.truncated.add(stream)
        kept = text.encode()[: self.limit - used].decode(errors="ignore")
        self.used[stream] = self.limit
        notice = output_line(
            "stderr", f"\n[{stream} output truncated: more than {self.limit} bytes]\n"
        )
        return [output_line(stream, kept), notice] if kept else [notice]


def translate(msg: dict[str, Any], budget: OutputBudget) -> list[Line]:
    """The E2B lines for one iopub message of the execution (status messages give none)."""
    kind = msg["header"]["msg_type"]
    content: dict[str, Any] = msg["content"]
    if kind == "stream":
        stream = "stderr" if content.get("name") == "stderr" else "stdout"
        return budget.admit(stream, str(content.get("text", "")))
    if kind == "execute_result":
        return [result_line(content.get("data", {}), is_main_result=True)]
    if kind == "display_data":
        return [result_line(content.get("data", {}), is_main_result=False)]
    if kind == "error":
        return [
            error_line(
                str(content.get("ename", "Error")),
                str(content.get("evalue", "")),
                "\n".join(content.get("traceback", [])),
            )
        ]
    if kind == "execute_input":
        return [{"type": "number_of_executions", "execution_count": content["execution_count"]}]
    return []
