from wxbench import hookimpl


@hookimpl
def wxbench_register_forecasters(register):
    from .models import Climatology, LinearRegression, MultiOutputLinearRegression, Persistence

    for cls in (Persistence, Climatology, LinearRegression, MultiOutputLinearRegression):
        register(cls)
