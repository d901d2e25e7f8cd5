"""Using trained weights: find a weights folder and what was saved beside it (:mod:`.weights`), prepare
a user's files exactly as the run prepared its test split, predict in batches and write the results
(:mod:`.predict`).

Import rule: nothing here imports the training engine or Accelerate, so ``appt predict`` starts
without them (``tests/test_predict_pipeline.py`` checks it). The modules are not imported here, so
``import appt.inference.weights`` stays light.
"""
