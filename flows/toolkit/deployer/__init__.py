"""The deploy machinery behind the command line: never shipped in a deployed copy.

In the order a deploy runs them (deploy.py's docstring lists the steps):
- deploy.py, delete.py, setup.py: the commands (deploy, deploy-all, plan; delete,
  delete-branch, prune; setup), each a string of the steps below;
- flow_file.py: the flow object and DEPLOYMENT settings of a flow file;
- naming.py: the pure rules: branch slug, stage, deployment name, storage place,
  pointer block, image tag;
- repository.py: what git says about the checkout, and the guard of main;
- plan.py: everything a deploy will do, decided before any of it;
- deployed_files.py: which files of flows/ a deploy copies;
- validation.py: every problem of a plan, found before anything changes;
- lease.py: one deploy of a branch at a time;
- storage/: the copies of flows/ in a folder or on S3, and the block pointing at one;
- prefect_api.py: every call to the Prefect API;
- kubernetes.py, notifications.py: a Kubernetes pool's job template, failure
  notifications.

It imports the runtime below it (errors, settings, connection blocks), never the
template machinery beside it.
"""
