"""The AWS edge: the narrow typed client of each service esm calls, and the one translator of
client failures into esm's error tree. It depends on botocore and esm's core only."""
