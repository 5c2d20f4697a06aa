from wxbench import hookimpl


@hookimpl
def wxbench_register_forecasters(register):
    from .models import SFNO, SFNOAutoregressive

    for cls in (SFNO, SFNOAutoregressive):
        register(cls)
