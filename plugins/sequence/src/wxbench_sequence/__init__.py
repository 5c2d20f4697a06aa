"""wxbench sequence models: lstm, bilstm, lstm_seq2seq, transformer, transformer_seq2seq, spatial_transformer."""
