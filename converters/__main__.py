"""``python -m converters ...``: the converter alone, same arguments as ``edgefleet convert``."""

import sys

from converters.cli import build_parser
from edgefleet.cli import missing_extra_message


def main() -> int:
    args = build_parser().parse_args()
    try:
        code: int = args.handler(args)
    except ModuleNotFoundError as err:
        print(missing_extra_message(err, "convert"), file=sys.stderr)  # noqa: T201
        return 3
    return code


sys.exit(main())
