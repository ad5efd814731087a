"""MLflow: the store and what each run writes (`store`), reading runs back (`readback`), and one
parent run per sweep (`sweep`)."""
