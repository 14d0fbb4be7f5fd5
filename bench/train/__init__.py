"""Training on the contract: data, losses and optimisers (array API), the loop."""
