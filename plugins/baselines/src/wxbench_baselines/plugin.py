from wxbench import hookimpl


@hookimpl
def wxbench_register_forecasters(register):
    from .models import LinearRegression, MultiOutputLinearRegression

    for cls in (LinearRegression, MultiOutputLinearRegression):
        register(cls)
