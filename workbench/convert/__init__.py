"""Making the low-precision variant (FP16, BF16, FP8) a real engine would run, and making old models runnable."""
