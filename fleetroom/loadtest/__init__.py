"""Scripted load tests: scenarios, the stage engine, measurement, objectives and the report."""
