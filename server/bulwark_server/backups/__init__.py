"""Encrypted key backups and snapshots of Bulwark's state."""
