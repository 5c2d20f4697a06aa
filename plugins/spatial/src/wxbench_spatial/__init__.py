"""wxbench plugin: spatial deep models (cnn, deep_cnn, convlstm, convlstm_seq2seq, weather_transformer)."""
