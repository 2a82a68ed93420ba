"""The exercises, one file per topic: each file defines its exercises' references (npcbam's
ops and modules, called), case generators and misconceptions, and exports ``EXERCISES``."""
