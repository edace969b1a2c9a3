"""Example Airflow DAG file: copy into your dags/ folder and point it at a recipe.

The scheduler imports this file to find `dag`; the recipe is validated then (a bad recipe shows up
as a DAG import error naming the field)."""

import os

from pipeline.integrations.airflow import build_dag

dag = build_dag(
    os.environ.get("LLM_QUANT_RECIPE", "/opt/recipes/smollm2-demo.yaml"),
    dag_id="llm_quant_smollm2_demo",
    schedule=None,  # triggered by hand or by an upstream DAG; a cron string works too
    workdir=os.environ.get("LLM_QUANT_WORKDIR", "/opt/runs"),
)
