"""The admission policy: pure stages over typed values, and the pipeline that runs them."""
