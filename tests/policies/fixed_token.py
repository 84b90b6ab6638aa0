"""A policy that only replaces get_ice_pass: the default has_ice_pass must then check its token."""


def get_ice_pass() -> str:
    return "fixed-token-from-policy"
