from wxbench import hookimpl


@hookimpl
def wxbench_register_forecasters(register):
    from .models import MODELS

    for cls in MODELS:
        register(cls)
