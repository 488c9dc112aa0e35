"""The server behind app.py: runtime (pool, work, sessions), jobs, the /v1 API and the page.

app.py builds the application from these parts (`app.create_app`); see its docstring
for which module holds what.
"""
