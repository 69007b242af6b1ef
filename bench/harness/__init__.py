"""Pieces of the Switchyard benchmark harness (bench/run.py): /proc readings, child processes, the systems
under test and their topologies, and the statistics the report uses."""
