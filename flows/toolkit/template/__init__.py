"""The release machinery: who owns which file, what a release records, and the
`release`, `upgrade` and `template-changed` commands.

It never ships in a deployed copy of flows/ and uses the standard library, git and
the runtime's errors only (toolkit.errors, toolkit.git): CI runs it before anything
else is installed.

- ownership.py: template-paths.txt, the template's files and the team's;
- release_record.py: release.json, the CHANGELOG and fetching a release;
- file_changes.py: writing an upgrade's files all or nothing;
- release.py, upgrade.py, changes.py: the three commands.
"""
