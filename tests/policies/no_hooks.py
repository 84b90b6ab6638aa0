"""A module that defines no hook: naming it as ICE_POLICY is an error."""

VALUE = 1
