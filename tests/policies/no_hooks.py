"""A module that defines no hook: naming it as POLICY is an error."""

VALUE = 1
