"""Reading what the user gives (models, external data, feeds) and writing what the workbench makes, safely."""
