"""Test and dry-run helpers (never imported by the analysis code): the paper-fixture hub."""
