"""Task-level checks: does the variant still give the same answer (top-k, mask, embedding ranking)?"""
