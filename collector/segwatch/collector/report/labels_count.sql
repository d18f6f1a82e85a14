-- How many labels one model has (the report says so when the config grades none).
SELECT count() FROM ml_labels FINAL WHERE model_name = {model:String}
