from wxbench import hookimpl


@hookimpl
def wxbench_register_forecasters(register):
    from .cnn import CNN, DeepCNN
    from .convlstm import ConvLSTM, ConvLSTMSeq2Seq
    from .transformer import WeatherTransformer

    for cls in (CNN, DeepCNN, ConvLSTM, ConvLSTMSeq2Seq, WeatherTransformer):
        register(cls)
