-- Every model the store holds aggregates of, at any time (an unknown --model is an error).
SELECT DISTINCT model_name FROM ml_segment_aggregates WHERE segment_dim = '__all__' ORDER BY model_name
