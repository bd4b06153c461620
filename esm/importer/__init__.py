"""`esm import`: esm.yaml from what a team already has, a SAM or CloudFormation template or
the output of `aws lambda list-event-source-mappings`.

loader (JSON, YAML with CloudFormation's tags) → intrinsics (Ref, GetAtt, Sub ... resolved,
or left as ${VAR}) → sam / cloudformation / lambda_listing (mappings in esm.yaml's terms,
through parameters) → output (functions and mappings, checked by esm's own model, as YAML).
"""

from esm.importer.errors import ImportFailure
from esm.importer.output import DEFAULT_URL, FUNCTION_TYPES, FunctionOptions
from esm.importer.run import ImportOptions, ImportResult, import_file

__all__ = [
    "DEFAULT_URL",
    "FUNCTION_TYPES",
    "FunctionOptions",
    "ImportFailure",
    "ImportOptions",
    "ImportResult",
    "import_file",
]
