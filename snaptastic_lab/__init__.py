"""A local stand-in for EC2, EBS and the instance metadata service, for testing snaptastic-boot unchanged.

Not part of the shipped `snaptastic_boot` package.
"""

from snaptastic_lab.faults import Faults
from snaptastic_lab.lab import DEFAULT_USERDATA, Lab

__all__ = ["DEFAULT_USERDATA", "Faults", "Lab"]
