"""What in a service's log reads as an error to an operator, for the tests of a quiet start."""

import re

# TensorFlow's C++ lines at ERROR or FATAL (absl's "E0000 ..."/"F0000 ..."), Python's and uvicorn's
# ERROR and CRITICAL lines, and tracebacks. TensorFlow's INFO lines ("I0000 ...") are not errors,
# even those it writes before its log level applies, such as the oneDNN notice on CPUs with AVX-512.
ERROR_LINE = re.compile(r"^(?:[EF]\d{4} |ERROR|CRITICAL|Traceback ).*$", re.MULTILINE)


def error_lines(output: str) -> list[str]:
    return ERROR_LINE.findall(output)
