"""The deploy machinery behind `util.run_flow_command_line_interface`.

Each module is one system: `repository` reads git, `plan` decides what a deploy does,
`storage` copies flows/ into flow storage, `prefect_api` talks to the Prefect API, and
`commands` strings them together in the order DESIGN.md gives.
"""
