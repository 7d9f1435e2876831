"""Boot tests: the built Debian package under a real systemd (systemd-nspawn), against the lab."""
