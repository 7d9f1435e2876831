# The lab (moto's EC2 server, an IMDSv2 server, loop devices in a private mount namespace) comes as a plugin.
pytest_plugins = ["snaptastic_lab.pytest_plugin"]
